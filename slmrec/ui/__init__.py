"""The Streamlit app's pages. Each page module has `render()`; `app.py` only picks one.

Pages are presentation only: every fact comes from `slmrec` (KB, graph, describe, search,
scenario, recommend, evidence) or `runners` APIs. Nothing here imports torch.
"""
