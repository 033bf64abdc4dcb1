"""labelkit's Streamlit entry point: page config, the shared Store and the navigation."""

import streamlit as st

from labelkit.ui import resources

st.set_page_config(page_title="labelkit", page_icon=":material/label:", layout="wide")

# Opened here so that a bad workspace or database URL fails on every page, not only on some.
resources.store()

pages = st.navigation(
    [
        st.Page("labelkit/ui/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("labelkit/ui/label.py", title="Label", icon=":material/label:", url_path="label"),
        st.Page("labelkit/ui/train.py", title="Train", icon=":material/model_training:", url_path="train"),
        st.Page("labelkit/ui/review.py", title="Review", icon=":material/fact_check:", url_path="review"),
        st.Page(
            "labelkit/ui/explore.py", title="Explore", icon=":material/scatter_plot:", url_path="explore"
        ),
        st.Page("labelkit/ui/export.py", title="Export", icon=":material/download:", url_path="export"),
        st.Page("labelkit/ui/settings.py", title="Settings", icon=":material/settings:", url_path="settings"),
    ]
)
pages.run()
