"""The client's request inspector (issue 15): what it captures, how it shows it, and replay."""
