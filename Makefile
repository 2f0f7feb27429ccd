.PHONY: setup serve demo test bench
setup:
	bash scripts/setup.sh

# The motion API on the embedded default (no Redis, no GPU needed): http://127.0.0.1:8000/
serve: setup
	.venv/bin/mofo serve

# Motion boxes for the bundled sample clip: JSON record on stdout, preview and motion maps on disk.
demo: setup
	.venv/bin/mofo boxes "$$(.venv/bin/mofo sample)" --json --preview sample-preview.gif --motion-map sample-motion.png

test: setup
	bash scripts/test.sh

bench: setup
	PYTHONPATH=. .venv/bin/python bench/flow_accuracy.py
	PYTHONPATH=. .venv/bin/python bench/speed.py
	PYTHONPATH=. .venv/bin/python bench/box_quality.py --suite classic
	PYTHONPATH=. .venv/bin/python bench/api_load.py
	PYTHONPATH=. .venv/bin/python bench/cache.py
