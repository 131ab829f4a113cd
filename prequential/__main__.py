from prequential.cli import entry

entry()
