from planzoom.server import run
from services.transcode.service import Transcode

run(Transcode)
