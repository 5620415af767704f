"""IIIF presentation (being written)."""

from fastapi import APIRouter

router = APIRouter()
