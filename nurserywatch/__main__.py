from nurserywatch.cli import app

app(prog_name="nurserywatch")
