"""RIPEMD-160 compression as MicroPython viper code (machine code, 32-bit words in registers).

Imported by amiko_core.hashing only: on CPython (no micropython module), on a port built
without the viper emitter, and from an .mpy compiled for another architecture the import
fails and hashing keeps its pure-Python compression. Same algorithm and tables as
hashing._compress (passed in as `x`: r, r', s, s' of the 80 steps, 80 bytes each).

_compress(h, data, offset, x): one block of the padded message: bytes offset..offset+63 of data,
followed by 0x80, zeros and the bit length (little-endian, 64 bits) as RIPEMD-160 pads it;
data is read byte by byte (any alignment, any host byte order), nothing is copied.
h is the caller's work area of 33 words (array "I"):
    h[0:5]   chaining value, updated in place
    h[5:21]  scratch: the 16 message words of the block
    h[21:26] K of the left line's five rounds, ws[26:31] K' of the right line's
    h[31]    0xFFFFFFFF (a machine word: masks sums on 64-bit ports, a no-op on 32-bit ones)
    h[32]    n, the message length in bytes (< 2**29)
The padded message has (n + 8) // 64 + 1 blocks.
"""

import micropython


@micropython.viper
def _compress(h: ptr32, data: ptr8, offset: int, x: ptr8):
    m = uint(h[31])
    n = int(h[32])
    if offset + 64 <= n:  # a block of the message itself
        i = 0
        while i < 16:
            p = offset + (i << 2)
            h[5 + i] = uint(data[p]) | (uint(data[p + 1]) << 8) | (uint(data[p + 2]) << 16) | (uint(data[p + 3]) << 24)
            i += 1
    else:  # a padded one
        last = ((n + 8) >> 6) << 6  # offset of the final block, which ends with the bit length
        bits = uint(n) << 3
        i = 0
        while i < 16:
            w = uint(0)
            k = 3
            while k >= 0:
                q = offset + (i << 2) + k
                if q < n:
                    b = uint(data[q])
                elif q == n:
                    b = uint(0x80)
                elif q >= last + 56 and q < last + 60:
                    b = (bits >> (uint(q - last - 56) << 3)) & 0xFF
                else:
                    b = uint(0)
                w = (w << 8) | b
                k -= 1
            h[5 + i] = w
            i += 1
    al = uint(h[0])
    bl = uint(h[1])
    cl = uint(h[2])
    dl = uint(h[3])
    el = uint(h[4])
    ar = al
    br = bl
    cr = cl
    dr = dl
    er = el
    j = 0
    while j < 80:
        rnd = j >> 4
        # the left line uses f1..f5 in round order, the right line f5..f1
        if rnd == 0:
            fl = bl ^ cl ^ dl
            fr = br ^ (cr | (dr ^ m))
        elif rnd == 1:
            fl = (bl & cl) | ((bl ^ m) & dl)
            fr = (br & dr) | (cr & (dr ^ m))
        elif rnd == 2:
            fl = (bl | (cl ^ m)) ^ dl
            fr = (br | (cr ^ m)) ^ dr
        elif rnd == 3:
            fl = (bl & dl) | (cl & (dl ^ m))
            fr = (br & cr) | ((br ^ m) & dr)
        else:
            fl = bl ^ (cl | (dl ^ m))
            fr = br ^ cr ^ dr
        t = (al + fl + uint(h[5 + int(x[j])]) + uint(h[21 + rnd])) & m
        s = uint(x[160 + j])
        t = ((((t << s) | (t >> (uint(32) - s))) & m) + el) & m
        al = el
        el = dl
        dl = ((cl << 10) | (cl >> 22)) & m
        cl = bl
        bl = t
        t = (ar + fr + uint(h[5 + int(x[80 + j])]) + uint(h[26 + rnd])) & m
        s = uint(x[240 + j])
        t = ((((t << s) | (t >> (uint(32) - s))) & m) + er) & m
        ar = er
        er = dr
        dr = ((cr << 10) | (cr >> 22)) & m
        cr = br
        br = t
        j += 1
    t = (uint(h[1]) + cl + dr) & m
    h[1] = (uint(h[2]) + dl + er) & m
    h[2] = (uint(h[3]) + el + ar) & m
    h[3] = (uint(h[4]) + al + br) & m
    h[4] = (uint(h[0]) + bl + cr) & m
    h[0] = t


@micropython.viper
def digest(h: ptr32, out: ptr8):
    """The chaining value h[0:5] as the 20-byte digest (little-endian words) into out."""
    i = 0
    while i < 5:
        w = uint(h[i])
        p = i << 2
        out[p] = w & 0xFF
        out[p + 1] = (w >> 8) & 0xFF
        out[p + 2] = (w >> 16) & 0xFF
        out[p + 3] = (w >> 24) & 0xFF
        i += 1
