"""A Streamlit page holding nothing but one plotly figure, read from the JSON file named by
``LABELKIT_BENCH_FIGURE``, sent as the Explore page sends its map (lasso and box selection on):
bench_explore_page serves it to measure what Streamlit and plotly.js cost without the rest of the page.
"""

import os

import plotly.io as pio
import streamlit as st


@st.cache_resource
def _figure(path: str) -> object:
    with open(path) as f:
        return pio.from_json(f.read())


st.title("Map only")
st.plotly_chart(
    _figure(os.environ["LABELKIT_BENCH_FIGURE"]),
    on_select="rerun",
    selection_mode=("lasso", "box"),
    key="map",
)
