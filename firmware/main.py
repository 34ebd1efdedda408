"""Entry point on the board: load /config.json, pick the board layer, run the wallet."""

import json

import board
from wallet import app


def _config():
    try:
        with open("config.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


app.run(board.select(_config()))
