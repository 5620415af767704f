from planzoom.server import run
from services.ingest.service import Ingest

run(Ingest)
