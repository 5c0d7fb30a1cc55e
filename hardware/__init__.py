"""Physical layer: panic buttons, LEDs and buzzer through gpiozero.

The panic-button issue fills this package; it is the only code that will
import gpiozero (DESIGN.md §2).
"""
