// Cancun, the EVM version hedgeflow compiles its Vyper contracts for (dataflows/chain/compile.py).
module.exports = { networks: { hardhat: { hardfork: "cancun", chainId: 31337 } } };
