"""The Streamlit pages: one module per page. The only part of labelkit that imports streamlit."""
