from planzoom.server import run
from services.render.service import Render

run(Render)
