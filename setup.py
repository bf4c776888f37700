"""Only what setup.cfg cannot say: the optional C extension of the proxy's message framer.

`optional=True`: where it cannot be built (no compiler or Python headers), installation goes on and
agent.proxy.pgwire uses its pure-Python framer instead.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("agent.proxy._framer", ["agent/proxy/_framer.c"], optional=True)])
