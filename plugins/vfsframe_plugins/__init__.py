"""vfsframe's built-in backends and middleware, registered through the same
``vfsframe.plugins`` entry points a third-party package uses."""
