"""The id rule shared by URLs and messages (payment ids, link names, meeting points).

An id is 1..MAX_ID (64) characters of ID_CHARS, the RFC 3986 "unreserved" set
[A-Za-z0-9._~-] that is safe in a URL path segment without percent-encoding, plus
the characters of `extra`; "." and ".." (URL dot-segments) are not ids. A meeting
point on the wire is an id that also allows ":" and "@" (MP_EXTRA) and is up to
MAX_MEETING_POINT characters long: NAME@KEY, a name of up to 64 characters and the
66 hex digits of its node's compressed public key (the node checks that form and the
key, amiko.node.meetingpoints). safe_problem is the same character rule with another
length limit and no dot-segment rule (URL query keys and values).
"""

MAX_ID = 64
MP_EXTRA = ":@"
MAX_MEETING_POINT = MAX_ID + 1 + 66
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"


def id_problem(text, extra="", max_len=MAX_ID):
    """Why text is not an id (1..max_len, by default 64, URL-safe characters plus those in
    extra, not a dot-segment), or None if it is one."""
    problem = safe_problem(text, extra, max_len)
    if problem is None and (text == "." or text == ".."):
        return "must not be %r (a URL dot-segment)" % text
    return problem


def safe_problem(text, extra, max_len):
    """Why text is not 1..max_len characters of ID_CHARS plus extra, or None."""
    if type(text) is not str:
        return "must be text, got %s" % type(text).__name__
    if not text:
        return "is empty"
    if len(text) > max_len:
        return "is %d characters long, at most %d allowed" % (len(text), max_len)
    # The check runs over the UTF-8 bytes: on MicroPython iterating (or indexing) a str
    # interns every character as a qstr, for good, so checking text from the network
    # character by character would grow the heap with each new character seen.
    # Fast path, in C: nothing left once the allowed characters are stripped from both ends
    # (then twice, ID_CHARS then extra, for the usual single separator of NAME@KEY); anything
    # else gets the exact check below.
    rest = text.strip(ID_CHARS)
    if not rest or (extra and not rest.strip(extra)):
        return None
    extra_bytes = extra.encode()
    for b in text.encode("utf-8", "surrogatepass"):
        if not (0x61 <= b <= 0x7A or 0x41 <= b <= 0x5A or 0x30 <= b <= 0x39 or b in b"._~-" or b in extra_bytes):
            break
    else:
        return None
    for c in text:  # only on the way out: name the first illegal character
        if c not in ID_CHARS and c not in extra:
            return "contains illegal character %r (allowed: A-Z a-z 0-9 . _ ~ -%s)" % (
                c,
                (" " + " ".join(extra)) if extra else "",
            )
    return None
