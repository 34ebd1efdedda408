"""SSD1306 OLED (128x64 or 128x32) over I2C, drawn with MicroPython's framebuf.

Display(spec) with spec from boards.json ui.display:
    {"type": "ssd1306", "bus": "i2c", "pins": {"sda": N, "scl": N}, "address": 60,
     "width": 128, "height": 64}
show(lines): clears and draws up to 4 lines of the 8x8 font (width // 8 characters each;
longer lines are clipped), 16 px apart on a 64 px panel, 8 px on a 32 px one.
Uses SoftI2C so any two GPIOs work. Construction raises OSError if nothing answers.
Needs `machine` and `framebuf`: real boards only.
"""

import framebuf
from machine import Pin, SoftI2C

_SET_CONTRAST = 0x81
_SET_ENTIRE_ON = 0xA4
_SET_NORM_INV = 0xA6
_SET_DISP = 0xAE
_SET_MEM_ADDR = 0x20
_SET_COL_ADDR = 0x21
_SET_PAGE_ADDR = 0x22
_SET_DISP_START_LINE = 0x40
_SET_SEG_REMAP = 0xA0
_SET_MUX_RATIO = 0xA8
_SET_COM_OUT_DIR = 0xC0
_SET_DISP_OFFSET = 0xD3
_SET_COM_PIN_CFG = 0xDA
_SET_DISP_CLK_DIV = 0xD5
_SET_PRECHARGE = 0xD9
_SET_VCOM_DESEL = 0xDB
_SET_CHARGE_PUMP = 0x8D


class SSD1306:
    def __init__(self, i2c, width, height, address=0x3C):
        self.i2c = i2c
        self.address = address
        self.width = width
        self.height = height
        self.pages = height // 8
        self.buffer = bytearray(self.pages * width)
        self.fb = framebuf.FrameBuffer(self.buffer, width, height, framebuf.MONO_VLSB)
        self._cmd_buf = bytearray(2)
        self._data_prefix = [b"\x40", None]
        self.init()

    def cmd(self, c):
        self._cmd_buf[0] = 0x80
        self._cmd_buf[1] = c
        self.i2c.writeto(self.address, self._cmd_buf)

    def init(self):
        for c in (_SET_DISP, _SET_MEM_ADDR, 0x00, _SET_DISP_START_LINE, _SET_SEG_REMAP | 0x01,
                  _SET_MUX_RATIO, self.height - 1, _SET_COM_OUT_DIR | 0x08, _SET_DISP_OFFSET, 0x00,
                  _SET_COM_PIN_CFG, 0x02 if self.width > 2 * self.height else 0x12,
                  _SET_DISP_CLK_DIV, 0x80, _SET_PRECHARGE, 0xF1, _SET_VCOM_DESEL, 0x30,
                  _SET_CONTRAST, 0xFF, _SET_ENTIRE_ON, _SET_NORM_INV, _SET_CHARGE_PUMP, 0x14,
                  _SET_DISP | 0x01):
            self.cmd(c)
        self.fb.fill(0)
        self.flush()

    def flush(self):
        for c in (_SET_COL_ADDR, 0, self.width - 1, _SET_PAGE_ADDR, 0, self.pages - 1):
            self.cmd(c)
        self._data_prefix[1] = self.buffer
        self.i2c.writevto(self.address, self._data_prefix)


class Display:
    def __init__(self, spec):
        pins = spec["pins"]
        i2c = SoftI2C(scl=Pin(pins["scl"]), sda=Pin(pins["sda"]), freq=400000)
        self.oled = SSD1306(i2c, spec.get("width", 128), spec.get("height", 64), spec.get("address", 0x3C))
        self.columns = self.oled.width // 8
        self.pitch = 16 if self.oled.height >= 64 else 8

    def show(self, lines):
        fb = self.oled.fb
        fb.fill(0)
        for i, line in enumerate(lines[:4]):
            fb.text(line[:self.columns], 0, i * self.pitch, 1)
        self.oled.flush()
