"""waste_edge/_io.py: the stdlib helpers every verb writes through."""

import os
import stat

from waste_edge._io import atomic_write_bytes, write_whole


def test_atomic_writes_get_the_mode_of_an_ordinary_file(tmp_path):
    """mkstemp creates 0600 files; a model or a report written for a user must be as readable as `open()` makes it."""
    target = atomic_write_bytes(tmp_path / "sub" / "model.json", b"{}")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert target.read_bytes() == b"{}" and not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


class _FullAfter:
    """An unbuffered file that accepts `room` bytes, then fails like a full disk."""

    def __init__(self, path, room):
        self.fh, self.room = open(path, "wb", buffering=0), room

    def write(self, data):
        if len(data) > self.room:
            self.fh.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return self.fh.write(data)

    def flush(self):
        pass

    def fileno(self):
        return self.fh.fileno()


def test_write_whole_cuts_back_to_the_last_whole_record(tmp_path):
    path = tmp_path / "rows.csv"
    f = _FullAfter(path, room=25)
    good = write_whole(f, b"a,1\r\nb,2\r\n", 0)
    try:
        write_whole(f, b"c,33333333333\r\nd,4\r\n", good)
    except OSError as e:
        assert e.errno == 28
    else:
        raise AssertionError("the full disk was not reported")
    f.fh.close()
    assert good == 10 and path.read_bytes() == b"a,1\r\nb,2\r\n"
