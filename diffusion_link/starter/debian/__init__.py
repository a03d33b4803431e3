"""Real recordings from Debian packages: fetching and unpacking the packages (`packages`) and reading the archives
their sounds are packed in (`archives`: zip/pk3, OpenClonk's C4Group, Qt `.rcc`, OpenTTD's `opensfx.cat`).

The audio is never committed: a build fetches it by package name into the cache folder (`$DIFFUSION_LINK_CACHE`)."""
