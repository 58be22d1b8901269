"""Development-only tools: the throwaway PostgreSQL cluster, the demo
(``python -m devtools.demo``) and the architecture figure (``python -m devtools.import_graph``).

Never part of the runtime package or image (the wheel ships ``runner`` only), and ``runner``
never imports it (a checked contract).
"""
