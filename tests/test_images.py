"""Saving pictures: A1111's numbering, never overwriting, with concurrent writers, and nothing half-written."""
from __future__ import annotations

import threading

from PIL import Image

from extension.images import next_sequence_number, save_png, save_png_as


def test_numbers_follow_the_largest_and_infotext_is_kept(tmp_path):
    (tmp_path / "00007-x.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("no number")
    path = save_png(Image.new("RGB", (8, 8), (10, 20, 30)), tmp_path, "42", "a prompt\nSteps: 3")
    assert path.name == "00008-42.png" and next_sequence_number(tmp_path) == 9
    with Image.open(path) as image:
        assert image.info["parameters"] == "a prompt\nSteps: 3" and image.getpixel((0, 0)) == (10, 20, 30)


def test_concurrent_writers_never_share_a_number_and_leave_no_temporary_file(tmp_path):
    paths, barrier = [], threading.Barrier(8)

    def write(i):
        barrier.wait()
        for _ in range(5):
            paths.append(save_png(Image.new("L", (4, 4), i), tmp_path, f"seed{i}"))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    numbers = sorted(int(p.name[:5]) for p in paths)
    assert numbers == list(range(40)) and len(set(paths)) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporaries left


def test_save_png_as_replaces_atomically(tmp_path):
    target = tmp_path / "demo.preview.png"
    save_png_as(Image.new("RGB", (4, 4), (1, 2, 3)), target)
    save_png_as(Image.new("RGB", (4, 4), (9, 9, 9)), target, "info")
    with Image.open(target) as image:
        assert image.getpixel((0, 0)) == (9, 9, 9) and image.info["parameters"] == "info"
    assert [p.name for p in tmp_path.iterdir()] == ["demo.preview.png"]


def test_written_files_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    import os

    from extension.fileio import atomic_write_bytes

    previous = os.umask(0o022)
    try:
        png = save_png(Image.new("RGB", (8, 8)), tmp_path, "1", "infotext")
        written = atomic_write_bytes(tmp_path / "settings.json", b"{}")
        assert png.stat().st_mode & 0o777 == 0o644 and written.stat().st_mode & 0o777 == 0o644
        written.chmod(0o640)  # a replaced file keeps the bits its owner gave it
        assert atomic_write_bytes(written, b"[]").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)
