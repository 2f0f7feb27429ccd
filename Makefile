.PHONY: setup demo test bench
setup:
	bash scripts/setup.sh

# Motion boxes for the bundled sample clip: JSON record on stdout, preview and motion maps on disk.
demo: setup
	.venv/bin/mofo boxes "$$(.venv/bin/mofo sample)" --json --preview sample-preview.gif --motion-map sample-motion.png

test: setup
	bash scripts/test.sh

bench: setup
	PYTHONPATH=. .venv/bin/python bench/flow_accuracy.py
	PYTHONPATH=. .venv/bin/python bench/speed.py
	PYTHONPATH=. .venv/bin/python bench/box_quality.py
