"""Deterministic CBOR (RFC 8949) for the subset Amiko Pay puts on the wire.

Encoding is the core deterministic encoding of RFC 8949 section 4.2.1 with
the length-first map key order of section 4.2.3, so `dumps(x)` is
byte-identical to `cbor2.dumps(x, canonical=True)`:
- integers and lengths use the shortest head (argument < 24 inline, then
  1, 2, 4 or 8 bytes); definite lengths only;
- map keys are sorted by their encoded bytes: shorter first, then bytewise.

Subset (anything else is refused):
- unsigned and negative integers -2**64 .. 2**64-1 (major types 0 and 1);
- byte strings (bytes; bytearray also encodes) and UTF-8 text strings;
- arrays (list; tuple also encodes) and maps (dict) whose keys are int or str;
- false, true, null.

`loads` accepts exactly the bytes `dumps` produces and nothing else. It
raises errors.DecodeError, with a reason and offset, on: floats, tags, simple
values other than false/true/null, undefined, indefinite lengths, the break
byte, reserved additional info 28-30, non-shortest heads, map keys that are
not int/text, duplicate or out-of-order map keys, invalid UTF-8 (overlong,
surrogates, > U+10FFFF), truncated input, trailing bytes, and the limits:
total input size (max_size), container nesting (max_depth: a container
inside d others is at depth d+1), items in the whole document (max_items:
array elements plus map entries) and string length in bytes (max_str).
A declared length or count is checked against the remaining input before
anything is allocated or looped over. `dumps` raises errors.EncodeError on
unsupported types (also as map keys), integers out of range, text with lone
surrogates and nesting deeper than MAX_ENCODE_DEPTH (catches cyclic values).
Both directions are iterative: no recursion, whatever the depth.
"""

from amiko_core.errors import DecodeError, EncodeError

MAX_ENCODE_DEPTH = 64
_UINT64_MAX = 0xFFFFFFFFFFFFFFFF
_KEY = object()  # decoder map frame marker: the next item is a key


# ---- encoding ----

def _head(out, major, n):
    if n < 24:
        out.append(major << 5 | n)
    elif n < 0x100:
        out.append(major << 5 | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(major << 5 | 25)
        out.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(major << 5 | 26)
        out.extend(n.to_bytes(4, "big"))
    else:
        out.append(major << 5 | 27)
        out.extend(n.to_bytes(8, "big"))


def _key_order(x):
    """The keys of dict x in canonical order (shorter encoding first, then bytewise)."""
    ints = True
    texts = True
    for k in x:
        if type(k) is str:
            ints = False
        elif type(k) is int and 0 <= k <= _UINT64_MAX:
            texts = False
        else:
            ints = texts = False
            break
    if ints:
        # The messages' case: for unsigned integers the canonical order (shorter head
        # first, then bytewise) is numeric order.
        return sorted(x)
    # Sorted by an encoding-derived key (not sorted(x, key=...): MicroPython skips the key
    # function for one item). Sort keys are unique, so the keys themselves are never compared.
    keyed = []
    if texts:
        # The wallet's records: a text key's encoding is a head that grows with the byte
        # length, then the bytes, so (byte length, bytes) sorts as the encodings do.
        for k in x:
            try:
                b = k.encode("utf-8")
            except UnicodeError:
                raise EncodeError("cbor: text is not encodable as UTF-8 (lone surrogate)")
            keyed.append((len(b), b, k))
    else:
        for k in x:
            if isinstance(k, bool) or not isinstance(k, (int, str)):
                raise EncodeError("cbor: map key must be int or str, not %s" % type(k).__name__)
            enc = dumps(k)
            keyed.append((len(enc), enc, k))
    keyed.sort()
    for i in range(len(keyed)):
        keyed[i] = keyed[i][2]
    return keyed


def dumps(obj):
    """Encode obj as deterministic CBOR bytes."""
    out = bytearray()
    # Depth-first over the open containers: `items` are the innermost one's (a dict's as key,
    # value, key, value... in canonical key order), i the next to write; `stack` holds the
    # enclosing ones' (items, i). Scalars are written where they are met, nothing is pushed.
    items = (obj,)
    i = 0
    stack = []
    while True:
        if i == len(items):
            if not stack:
                return bytes(out)
            items, i = stack.pop()
            continue
        x = items[i]
        i += 1
        t = type(x)
        if t is str:
            try:
                b = x.encode("utf-8")
            except UnicodeError:
                raise EncodeError("cbor: text is not encodable as UTF-8 (lone surrogate)")
            n = len(b)
            if n < 24:
                out.append(0x60 | n)
            elif n < 0x100:
                out.append(0x78)
                out.append(n)
            else:
                _head(out, 3, n)
            out.extend(b)
        elif t is int:
            if 0 <= x < 24:
                out.append(x)
            elif x > _UINT64_MAX or x < -1 - _UINT64_MAX:
                raise EncodeError("cbor: integer out of 64-bit range: %d" % x)
            elif x >= 0:
                _head(out, 0, x)
            else:
                _head(out, 1, -1 - x)
        elif t is bytes or t is bytearray:
            n = len(x)
            if n < 24:
                out.append(0x40 | n)
            elif n < 0x100:
                out.append(0x58)
                out.append(n)
            else:
                _head(out, 2, n)
            out.extend(x)
        elif x is None:
            out.append(0xF6)
        elif x is False:
            out.append(0xF4)
        elif x is True:
            out.append(0xF5)
        elif isinstance(x, (list, tuple, dict)):
            stack.append((items, i))
            if len(stack) > MAX_ENCODE_DEPTH:
                raise EncodeError("cbor: nesting deeper than %d (cyclic value?)" % MAX_ENCODE_DEPTH)
            if isinstance(x, dict):
                _head(out, 5, len(x))
                items = []
                for k in _key_order(x):
                    items.append(k)
                    items.append(x[k])
            else:
                _head(out, 4, len(x))
                items = x
            i = 0
        elif isinstance(x, int):  # a subclass (a bool never gets here: handled above)
            out.extend(dumps(int(x)))
        elif isinstance(x, (bytes, bytearray)):
            _head(out, 2, len(x))
            out.extend(x)
        elif isinstance(x, str):
            try:
                b = x.encode("utf-8")
            except UnicodeError:
                raise EncodeError("cbor: text is not encodable as UTF-8 (lone surrogate)")
            _head(out, 3, len(b))
            out.extend(b)
        else:
            raise EncodeError("cbor: cannot encode type %s" % type(x).__name__)


# ---- decoding ----

def _fail(what, offset):
    raise DecodeError("cbor: %s at offset %d" % (what, offset))


def _read_head(mv, pos, end):
    """Read the head at pos: (major type, argument, offset after the head).
    For major type 7 (only false/true/null get through) the argument is the
    additional info."""
    if pos >= end:
        _fail("truncated input", pos)
    major = mv[pos] >> 5
    ai = mv[pos] & 31
    if major == 7:
        if 20 <= ai <= 22:
            return 7, ai, pos + 1
        if ai == 23:
            _fail("undefined is not supported", pos)
        if 25 <= ai <= 27:
            _fail("floats are not supported", pos)
        if ai == 31:
            _fail("unexpected break byte", pos)
        if 28 <= ai <= 30:
            _fail("reserved additional info %d" % ai, pos)
        _fail("simple values other than false/true/null are not supported", pos)
    if major == 6:
        _fail("tags are not supported", pos)
    if ai < 24:
        return major, ai, pos + 1
    if ai == 31:
        _fail("indefinite length is not allowed" if major >= 2 else "reserved additional info 31", pos)
    if ai > 27:
        _fail("reserved additional info %d" % ai, pos)
    size = 1 << (ai - 24)
    if end - pos - 1 < size:
        _fail("truncated input: head needs %d argument bytes" % size, pos)
    if size == 1:
        arg = mv[pos + 1]
        shortest = arg >= 24
    else:
        arg = int.from_bytes(mv[pos + 1:pos + 1 + size], "big")
        shortest = arg >> (4 * size) != 0
    if not shortest:
        _fail("non-shortest integer/length encoding", pos)
    return major, arg, pos + 1 + size


def _decode_utf8(mv, pos, end):
    # MicroPython's decoder lets overlongs, surrogates and > U+10FFFF through.
    i = pos
    while i < end:
        c = mv[i]
        if c < 0x80:
            i += 1
            continue
        lo, hi = 0x80, 0xBF  # range of the first continuation byte
        if 0xC2 <= c <= 0xDF:
            n = 1
        elif 0xE0 <= c <= 0xEF:
            n = 2
            if c == 0xE0:
                lo = 0xA0
            elif c == 0xED:
                hi = 0x9F
        elif 0xF0 <= c <= 0xF4:
            n = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F
        else:
            n = 0
        if n == 0 or i + n >= end or not lo <= mv[i + 1] <= hi:
            _fail("invalid UTF-8 in text string", i)
        for j in range(i + 2, i + n + 1):
            if mv[j] & 0xC0 != 0x80:
                _fail("invalid UTF-8 in text string", i)
        i += n + 1
    return str(mv[pos:end], "utf-8")


def _check_key_order(mv, prev_start, prev_end, start, end):
    if prev_end == 0:  # first key of the map
        return
    plen = prev_end - prev_start
    if end - start == plen:
        i = 0
        while i < plen and mv[prev_start + i] == mv[start + i]:
            i += 1
        if i == plen:
            _fail("duplicate map key", start)
        if mv[start + i] > mv[prev_start + i]:
            return
    elif end - start > plen:
        return
    _fail("map keys out of canonical order", start)


def loads(data, max_size=4096, max_depth=16, max_items=256, max_str=2048):
    """Decode exactly one deterministic CBOR item from data (bytes-like)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("cbor: input must be bytes, not %s" % type(data).__name__)
    mv = memoryview(data)
    if getattr(mv, "itemsize", 1) != 1:  # MicroPython's memoryview has no itemsize
        raise DecodeError("cbor: input memoryview must have 1-byte items")
    end = len(mv)
    if end > max_size:
        raise DecodeError("cbor: input of %d bytes exceeds max_size %d" % (end, max_size))
    pos = 0
    items = 0
    # open containers, innermost last: [container, items left, key, key start, key end]
    # key is None for arrays, _KEY for a map awaiting a key, else the pending key.
    stack = []
    while True:
        start = pos
        head = mv[pos] if pos < end else 0xFF
        if head < 0xC0 and head & 31 < 24:  # major 0..5 with the argument in the head: inline
            major = head >> 5
            arg = head & 31
            pos += 1
        elif head < 0xC0 and head & 31 == 24 and pos + 1 < end and mv[pos + 1] >= 24:  # one argument byte
            major = head >> 5
            arg = mv[pos + 1]
            pos += 2
        else:
            major, arg, pos = _read_head(mv, pos, end)
        if stack and stack[-1][2] is _KEY and major not in (0, 1, 3):
            _fail("map key must be an integer or text string", start)
        if major == 0:
            value = arg
        elif major == 1:
            value = -1 - arg
        elif major <= 3:
            if arg > max_str:
                _fail("string of %d bytes exceeds max_str %d" % (arg, max_str), start)
            if arg > end - pos:
                _fail("truncated input: string of %d bytes declared, %d bytes left" % (arg, end - pos), start)
            value = bytes(mv[pos:pos + arg]) if major == 2 else _decode_utf8(mv, pos, pos + arg)
            pos += arg
        elif major <= 5:
            if len(stack) >= max_depth:
                _fail("nesting deeper than max_depth %d" % max_depth, start)
            items += arg
            if items > max_items:
                _fail("document has more than max_items %d items" % max_items, start)
            if arg * (major - 3) > end - pos:  # every array item / map key and value takes >= 1 byte
                _fail("truncated input: %d items declared, %d bytes left" % (arg, end - pos), start)
            value = [] if major == 4 else {}
            if arg:
                stack.append([value, arg, _KEY if major == 5 else None, 0, 0])
                continue
        else:
            value = (False, True, None)[arg - 20]
        # hand the finished value to the open containers, closing the full ones
        while stack:
            frame = stack[-1]
            key = frame[2]
            if key is None:
                frame[0].append(value)
            elif key is _KEY:  # value is a scalar key spanning start..pos
                if pos - start != 1 or frame[4] - frame[3] != 1 or mv[start] <= mv[frame[3]]:
                    _check_key_order(mv, frame[3], frame[4], start, pos)  # (one-byte keys in order pass)
                frame[2], frame[3], frame[4] = value, start, pos
                break
            else:
                frame[0][key] = value
                frame[2] = _KEY
            frame[1] -= 1
            if frame[1]:
                break
            stack.pop()
            value = frame[0]
        else:
            if pos != end:
                _fail("trailing bytes", pos)
            return value
