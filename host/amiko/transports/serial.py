"""Serial transport (pyserial): the wallet's USB CDC port, a UART, or a pty of a virtual board."""

import asyncio
import time

import serial


BUSY_WAIT = 3.0  # seconds to wait for a port another program holds (exclusive lock)


class SerialTransport:
    """The port is opened exclusively: two programs talking to one wallet would mix frames."""

    def __init__(self, port, baud=115200):
        self.port = port
        deadline = time.monotonic() + BUSY_WAIT
        while True:
            try:
                self.ser = serial.Serial(port, baud, timeout=0, write_timeout=5, exclusive=True)
                return
            except serial.SerialException as e:
                busy = "exclusively lock" in str(e)
                if not busy or time.monotonic() > deadline:
                    raise OSError("cannot open serial port %s: %s%s" % (
                        port, e, " (another program uses it)" if busy else "")) from None
            time.sleep(0.05)

    @classmethod
    def from_spec(cls, spec):
        rest = spec[len("serial:"):]
        path, _, query = rest.partition("?")
        baud = 115200
        for pair in filter(None, query.split("&")):
            k, _, v = pair.partition("=")
            if k == "baud" and v.isdigit():
                baud = int(v)
            else:
                raise ValueError("unknown serial option %r in %r" % (pair, spec))
        return cls(path, baud)

    async def read(self):
        loop = asyncio.get_running_loop()
        while True:
            data = self.ser.read(4096)
            if data:
                return data
            fut = loop.create_future()
            fd = self.ser.fileno()
            loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
            try:
                await fut
            finally:
                loop.remove_reader(fd)

    def read_blocking(self, timeout):
        self.ser.timeout = timeout
        try:
            return self.ser.read(4096)
        finally:
            self.ser.timeout = 0

    def write(self, data):
        self.ser.write(data)
        self.ser.flush()

    def close(self):
        self.ser.close()
