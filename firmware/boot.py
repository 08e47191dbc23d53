# boot.py: runs at every start before main.py. Kept tiny: an app update never replaces it.
import gc

gc.collect()
