"""The bench suite: one module per fault family; every test is a scenario the oracle checks.

Each scenario's docstring names the field failure it reproduces (F-numbers refer to the fault
scenarios of pos-domain §6.3). The same files run unchanged on a real rig; a scenario whose
equipment the rig lacks is skipped with the reason.
"""
