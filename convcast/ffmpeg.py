"""The `ffmpeg` program convcast reads and writes videos with: the one imageio-ffmpeg ships (or
the one `IMAGEIO_FFMPEG_EXE` names), and its reason for failing, from its log."""

from __future__ import annotations

import re


def ffmpeg_exe() -> str:
    """The `ffmpeg` program: imageio-ffmpeg's own (or the one IMAGEIO_FFMPEG_EXE names)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_reason(stderr: str) -> str:
    """FFmpeg's reason for failing: the first line of its log that tells an error (without the
    `[demuxer @ 0x...]` prefix), else its last line."""
    noise = ("frame=", "Press [q]", "Conversion failed")  # progress and ffmpeg's last words
    lines = [re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", ln.strip()) for ln in stderr.splitlines()
             if ln.strip() and not ln.lstrip().startswith(noise)]
    telling = [ln for ln in lines if re.search(r"error|invalid|not found|moov|unsupported|"
                                               r"corrupt|no such", ln, re.IGNORECASE)]
    return (telling or lines or ["no message"])[0 if telling else -1]
