"""sgdwalk's user interface: the Typer CLI, headless progress, the Textual dashboard and exports."""
