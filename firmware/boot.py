# boot.py: runs at every start before main.py. Kept tiny: an app update never replaces it.
import gc

# Collect after every 4 KB allocated rather than only when the heap is full: the garbage of loading the
# agent's modules is then reclaimed before long-lived objects are placed around it, which keeps the
# 110 KB heap of an ESP32 without PSRAM from fragmenting (the agent fits it with little to spare).
gc.collect()
gc.threshold(4096)
