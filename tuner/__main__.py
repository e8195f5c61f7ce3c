from tuner.cli import main

# Guarded: worker processes start with spawn, which imports the main module again.
if __name__ == "__main__":
    main()
