import sys

from pyro_vae.cli.generate import main

if __name__ == "__main__":
    sys.exit(main())
