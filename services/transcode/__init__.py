"""transcode: JetStream consumer of ``videos.transcode``. Turns one video
into an HLS rendition ladder (H.264/AAC, RFC 8216) with a poster and a
thumbnail, inside a sandboxed worker process (PyAV), reporting the share of
the source transcoded as it goes. Entry point: ``python -m services.transcode``."""
