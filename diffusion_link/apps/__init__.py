"""What users run: the `diffusion-link` command line (`cli`), the evaluation it drives (`evaluation`, reading
`reference_captions`), `make demo` (`demo`) and the web page with its Space export (`web_demo`). Never Hub code."""
