"""Prints <prefix>/lib/python3.X/dist-packages when this Python searches it,
else nothing (python/meson.build: where `meson install` puts torchlens_cpp)."""
import os
import sys

path = os.path.join(sys.argv[1], "lib", "python%d.%d" % sys.version_info[:2], "dist-packages")
print(path if path in sys.path else "")
