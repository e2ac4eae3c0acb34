#!/usr/bin/env python3
"""A sorting flap and an "uncertain" lamp on a Raspberry Pi, driven by `waste-edge serve --on-decision` (gpiozero).

NOT TRIED ON HARDWARE: written against gpiozero's documented API and run here only with gpiozero's mock pins
(`--mock`). Check the angles and the wiring on the bench before a flap moves anything heavier than paper.

waste-edge runs this once per decision change, with the decision in WASTE_EDGE_LABEL (B, N or uncertain;
see README "Acting on decisions"), and at most one run per camera at a time: while a flap cycle runs, the
newest decision waits and older waiting ones are skipped. Each run does one finite thing and exits:

  B          flap to --b-angle, hold --open-s (the item drops), back to closed (0 degrees)
  N          flap to --n-angle, hold, back to closed
  uncertain  flap stays closed; the LED blinks for --blink-s (someone should look)

Nothing is held between runs: gpiozero releases the pins when the process exits (a hobby servo without
pulses rests where it is, closed; the LED is off). Wiring (BCM numbers; change with --servo-pin/--led-pin):

  GPIO17 -> servo signal. Servo power from a 5 V supply that can deliver its stall current (not the Pi's
            5 V pin for anything bigger than a micro servo), grounds joined.
  GPIO27 -> 330 ohm resistor -> LED anode; LED cathode -> GND.

Software PWM jitters on a busy Pi; for a steady servo run pigpiod and set GPIOZERO_PIN_FACTORY=pigpio.

  waste-edge serve --device bin=0 --threshold 0.7 --on-decision /opt/waste-edge/flap.py --on-decision-timeout 8
  WASTE_EDGE_LABEL=B python3 flap.py --mock          # on any computer: prints what the pins would do
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Move a servo flap / blink an LED for one waste-edge decision (WASTE_EDGE_LABEL).")
    p.add_argument("--servo-pin", type=int, default=17, help="BCM pin of the servo signal (default: %(default)s)")
    p.add_argument("--led-pin", type=int, default=27, help="BCM pin of the 'uncertain' LED (default: %(default)s)")
    p.add_argument("--b-angle", type=float, default=-45.0, help="flap angle for B, biodegradable (default: %(default)s)")
    p.add_argument("--n-angle", type=float, default=45.0, help="flap angle for N, non-biodegradable (default: %(default)s)")
    p.add_argument("--open-s", type=float, default=1.5, help="seconds the flap stays open (default: %(default)s)")
    p.add_argument("--blink-s", type=float, default=3.0, help="seconds the LED blinks for 'uncertain' (default: %(default)s)")
    p.add_argument("--mock", action="store_true", help="gpiozero's mock pins: try it without a Pi")
    args = p.parse_args(argv)

    label = os.environ.get("WASTE_EDGE_LABEL", "")
    if not label:
        print("flap.py: WASTE_EDGE_LABEL is not set (run me from waste-edge serve --on-decision)", file=sys.stderr)
        return 2

    from gpiozero import LED, AngularServo, Device  # imported late: --help works without gpiozero

    if args.mock:
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    camera = os.environ.get("WASTE_EDGE_CAMERA", "?")
    confidence = float(os.environ.get("WASTE_EDGE_CONFIDENCE", "0") or 0)
    angle = {"B": args.b_angle, "N": args.n_angle}.get(label)
    if angle is None:  # uncertain (or a class this flap does not know): keep closed, ask a person
        with LED(args.led_pin) as led:
            print(f"flap.py: {camera} {label} ({confidence:.2f}): flap stays closed, LED GPIO{args.led_pin} blinks {args.blink_s:g} s", flush=True)
            led.blink(on_time=0.25, off_time=0.25)
            time.sleep(args.blink_s)
        return 0
    with AngularServo(args.servo_pin, min_angle=-90, max_angle=90, initial_angle=0.0) as servo:
        print(f"flap.py: {camera} {label} ({confidence:.2f}): flap to {angle:g} degrees for {args.open_s:g} s", flush=True)
        servo.angle = angle
        time.sleep(args.open_s)
        servo.angle = 0.0
        time.sleep(0.4)  # let it reach closed before the pulses stop
        if args.mock:
            print(f"flap.py: mock GPIO{args.servo_pin} pulse width now {servo.pulse_width * 1e3:.2f} ms (closed)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
