import sys

from pyro_vae.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
