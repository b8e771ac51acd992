"""`fathom bench`: long-context task families with exact answers, baselines, runs and reports.

Kept free of imports so that `import fathom` never pays for the benchmark; import the
submodules (`fathom.bench.tasks`, `fathom.bench.scoring`, ...) where they are used.
"""
