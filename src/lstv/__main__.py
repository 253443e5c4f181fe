from lstv.cli import run

run()
