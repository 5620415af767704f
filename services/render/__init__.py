"""render: JetStream consumer of ``pages.render``. Renders one PDF page with
PDFium in horizontal bands inside a worker process, hands the raster to the
tile stage through object storage, and reports progress. It is the only stage
that parses untrusted PDF bytes. Entry point: ``python -m services.render``."""
