from nurserywatch.cli.main import app

app(prog_name="nurserywatch")
