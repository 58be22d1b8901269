"""What a short-lived process needs: signals, interrupts, the garbage collector."""
