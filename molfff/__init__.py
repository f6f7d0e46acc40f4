"""molfff: free-form flows for molecules, Boltzmann generators and dense densities."""

__version__ = "0.1.0"
