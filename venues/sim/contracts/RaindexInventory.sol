// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

interface IERC20Inventory {
    function decimals() external view returns (uint8);
    function balanceOf(address account) external view returns (uint256);
    function approve(address spender, uint256 value) external returns (bool);
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

struct EvaluableV4 {
    address interpreter;
    address store;
    bytes bytecode;
}

struct SignedContextV1 {
    address signer;
    bytes32[] context;
    bytes signature;
}

struct TaskV2 {
    EvaluableV4 evaluable;
    SignedContextV1[] signedContext;
}

interface IRaindexV6Vaults {
    function deposit4(address token, bytes32 vaultId, bytes32 depositAmount, TaskV2[] calldata tasks)
        external;
    function withdraw4(address token, bytes32 vaultId, bytes32 targetAmount, TaskV2[] calldata tasks)
        external;
}

/// @title RaindexInventory (simulation)
/// @notice A shared inventory contract that owns order book vaults ("managed" mode): a wallet
/// holding `OPERATOR_ROLE` calls `deposit4` / `withdraw4` here with the order book's own
/// signatures; the vaults belong to this contract, so balances are read from the order book
/// with this contract's address as owner. A deposit pulls the tokens from the operator and
/// deposits them; a withdrawal sends what the order book released on to the operator.
/// Simplifications: one admin (the deployer) grants roles; reverts carry strings.
contract RaindexInventory {
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    address public immutable orderbook;
    address public admin;
    mapping(bytes32 => mapping(address => bool)) private roles;

    event RoleGranted(bytes32 indexed role, address indexed account, address indexed sender);

    constructor(address orderbook_) {
        orderbook = orderbook_;
        admin = msg.sender;
    }

    function hasRole(bytes32 role, address account) external view returns (bool) {
        return roles[role][account];
    }

    function grantRole(bytes32 role, address account) external {
        require(msg.sender == admin, "AccessControl: caller is not the admin");
        roles[role][account] = true;
        emit RoleGranted(role, account, msg.sender);
    }

    modifier onlyOperator() {
        require(roles[OPERATOR_ROLE][msg.sender], "AccessControlUnauthorizedAccount");
        _;
    }

    function deposit4(address token, bytes32 vaultId, bytes32 depositAmount, TaskV2[] calldata tasks)
        external
        onlyOperator
    {
        uint256 amount = _toUnits(depositAmount, IERC20Inventory(token).decimals());
        require(
            IERC20Inventory(token).transferFrom(msg.sender, address(this), amount),
            "Transfer operation failed"
        );
        require(IERC20Inventory(token).approve(orderbook, amount), "Approve failed");
        IRaindexV6Vaults(orderbook).deposit4(token, vaultId, depositAmount, tasks);
    }

    function withdraw4(address token, bytes32 vaultId, bytes32 targetAmount, TaskV2[] calldata tasks)
        external
        onlyOperator
    {
        uint256 before = IERC20Inventory(token).balanceOf(address(this));
        IRaindexV6Vaults(orderbook).withdraw4(token, vaultId, targetAmount, tasks);
        uint256 moved = IERC20Inventory(token).balanceOf(address(this)) - before;
        if (moved > 0) {
            require(IERC20Inventory(token).transfer(msg.sender, moved), "Transfer operation failed");
        }
    }

    /// Whole token units of a Float (as the order book converts it); reverts when it is not.
    function _toUnits(bytes32 value, uint8 decimals) internal pure returns (uint256) {
        uint256 word = uint256(value);
        int256 coefficient = int256(int224(uint224(word)));
        int256 exponent = int256(int32(uint32(word >> 224)));
        require(coefficient >= 0, "NegativeFixedDecimalConversion");
        if (coefficient == 0) return 0;
        uint256 units = uint256(coefficient);
        int256 shift = exponent + int256(uint256(decimals));
        if (shift >= 0) {
            return units * (10 ** uint256(shift));
        }
        uint256 divisor = 10 ** uint256(-shift);
        require(units % divisor == 0, "LossyConversionToFixedDecimal");
        return units / divisor;
    }
}
