"""What users run: the `diffusion-link` command line (`cli`), the evaluation it drives (`evaluation`, reading
`reference_captions`), `make demo` (`demo`), the web page (`web_demo`) and its export as a Hub Space (`space`),
all loading their captioner one way (`loading`). Never Hub code."""
