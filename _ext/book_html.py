"""The book's own Sphinx tweak: each page loads every script once.

Jupyter Book 1 sets up sphinx-thebe and sphinx-togglebutton twice, so every page declared their
inline configuration twice, and the second ``const THEBE_JS_URL`` is a JavaScript error in the
browser console (``make check-html`` fails on console errors).
"""
from __future__ import annotations


def _once(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for js in context.get("script_files", []):
        attributes = getattr(js, "attributes", {}) or {}
        key = (getattr(js, "filename", None) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:                    # an inline script has filename None or ""
            seen.add(key)
            kept.append(js)
    context["script_files"][:] = kept


def setup(app):
    # late, after the handlers that add a page's own scripts (MathJax on pages with math)
    app.connect("html-page-context", _once, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
