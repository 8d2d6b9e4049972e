"""Stand-in for the parts of Pyodide the Workers import."""
__version__ = "0.28.2-localrt"
