"""postback: real-time partner postbacks (event notifications), impact.com-style."""

__version__ = "0.1.0"
