import sys

from pyro_vae.cli.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
