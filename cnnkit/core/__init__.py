"""Everything the plugins share, in wings that import one way (see DESIGN.md). Never imports
``cnnkit.plugins``. Importing it makes torchvision's import light (:mod:`cnnkit.core.base.imports`)."""

from cnnkit.core.base import imports

imports.install()
