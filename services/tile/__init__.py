"""tile: JetStream consumer of ``pages.tile``, scaled horizontally. Builds the
DZI pyramid of one page raster with libvips, uploads the tiles concurrently
and writes the ``.dzi`` last, so its presence means "page complete".
Entry point: ``python -m services.tile``."""
