from planzoom.server import run
from services.progress.service import Progress

run(Progress)
