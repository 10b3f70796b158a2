"""Sphinx configuration of the cnnext documentation.

Build (warnings are errors, as in CI) from the repository root, with cnnext
installed (``pip install -e ".[docs]"``):

    sphinx-build -W --keep-going -b html docs docs/_build/html

The API reference documents the *installed* cnnext (compiled kernels
included); nothing here puts the source tree on ``sys.path``.
"""
import re

import cnnext

project = "cnnext"
author = "The cnnext developers"
copyright = "the cnnext developers"
release = cnnext.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build"]

# -- API reference -----------------------------------------------------------
# autosummary writes one page per module into generated/ (not committed);
# the module template (_templates/autosummary/module.rst) documents the
# module's public members (its __all__) on that page and, for a package,
# lists its public submodules, found at build time.
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"
# numpydoc renders the Parameters/Returns/Examples sections.  Its per-class
# "Methods" tables are off: autodoc already documents the methods.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# The Attributes sections of cnnext.nn's layers list ``params``, which
# numpydoc links to the attribute's page; the layers inherit it from
# cnnext.nn.Module (documented there, and overridden by Sequential), so the
# link has two candidates and Sphinx warns that it is ambiguous.  This
# silences exactly that warning (ambiguous Python cross-references), which
# Sphinx resolves to the first candidate anyway.
suppress_warnings = ["ref.python"]

# -- Markdown (README, CONTRIBUTING, docs/*.md) --------------------------------
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# -- HTML ----------------------------------------------------------------------
html_theme = "furo"
html_title = f"cnnext {release}"

# -- Links in included files -----------------------------------------------------
# README.md and CONTRIBUTING.md are included into pages here; their links are
# relative to the repository root.  Point them at the pages that hold those
# files (any other repository link in them would be a broken link here, and
# fails the build).
REPOSITORY_LINKS = {
    "docs/compat.md": "compat.md",
    "docs/robustness.md": "robustness.md",
    "docs/interop.md": "interop.md",
    "docs/distributed.md": "distributed.md",
    "docs/convolution-algorithms.md": "convolution-algorithms.md",
    "CONTRIBUTING.md": "contributing.md",
}
_LINK = re.compile(r"\]\(([^)#\s]+)")


def _relink(app, relative_path, parent_docname, content):
    if relative_path.name not in ("README.md", "CONTRIBUTING.md"):
        return
    content[0] = _LINK.sub(
        lambda m: "](" + REPOSITORY_LINKS.get(m.group(1), m.group(1)), content[0]
    )


def setup(app):
    app.connect("include-read", _relink)
