from planzoom.server import run
from services.tile.service import Tile

run(Tile)
