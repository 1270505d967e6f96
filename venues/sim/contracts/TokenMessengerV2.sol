// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

interface IMintBurnToken {
    function transferFrom(address from, address to, uint256 value) external returns (bool);
    function mint(address to, uint256 value) external;
    function burn(uint256 value) external;
}

interface IMessageTransmitterV2 {
    function localDomain() external view returns (uint32);
    function sendMessage(
        uint32 destinationDomain,
        bytes32 recipient,
        bytes32 destinationCaller,
        uint32 minFinalityThreshold,
        bytes calldata messageBody
    ) external;
}

/// @title TokenMessengerV2 (simulation)
/// @notice Circle CCTP V2 burn-and-mint with the same external `depositForBurn` signature and the
/// same burn-message body layout:
///   version(4) burnToken(32) mintRecipient(32) amount(32) messageSender(32) maxFee(32)
///   feeExecuted(32) expirationBlock(32) hookData(...)
/// The TokenMinter is folded into this contract (it must be a minter of each local token).
/// On receipt, `amount - feeExecuted` goes to the recipient and `feeExecuted` to feeRecipient.
contract TokenMessengerV2 {
    uint32 public constant MESSAGE_BODY_VERSION = 1;
    uint32 public constant FINALITY_THRESHOLD_FAST = 1000;

    IMessageTransmitterV2 public immutable localMessageTransmitter;
    address public owner;
    address public feeRecipient;
    /// @notice remote domain => TokenMessenger on that domain (as bytes32)
    mapping(uint32 => bytes32) public remoteTokenMessengers;
    /// @notice keccak256(remoteDomain, remoteToken) => local token
    mapping(bytes32 => address) public localTokens;
    /// @notice local token => remote domain => remote token; a burn needs a linked pair
    mapping(address => mapping(uint32 => bytes32)) public remoteTokens;

    event DepositForBurn(
        address indexed burnToken,
        uint256 amount,
        address indexed depositor,
        bytes32 mintRecipient,
        uint32 destinationDomain,
        bytes32 destinationTokenMessenger,
        bytes32 destinationCaller,
        uint256 maxFee,
        uint32 indexed minFinalityThreshold,
        bytes hookData
    );
    event MintAndWithdraw(
        address indexed mintRecipient, uint256 amount, address indexed mintToken, uint256 feeCollected
    );

    modifier onlyOwner() {
        require(msg.sender == owner, "Caller is not the owner");
        _;
    }

    constructor(address messageTransmitter, address feeRecipient_) {
        localMessageTransmitter = IMessageTransmitterV2(messageTransmitter);
        owner = msg.sender;
        feeRecipient = feeRecipient_;
    }

    function addRemoteTokenMessenger(uint32 domain, bytes32 tokenMessenger) external onlyOwner {
        require(tokenMessenger != bytes32(0), "bytes32(0) not allowed");
        remoteTokenMessengers[domain] = tokenMessenger;
    }

    function linkTokenPair(address localToken, uint32 remoteDomain, bytes32 remoteToken)
        external
        onlyOwner
    {
        localTokens[keccak256(abi.encodePacked(remoteDomain, remoteToken))] = localToken;
        remoteTokens[localToken][remoteDomain] = remoteToken;
    }

    function depositForBurn(
        uint256 amount,
        uint32 destinationDomain,
        bytes32 mintRecipient,
        address burnToken,
        bytes32 destinationCaller,
        uint256 maxFee,
        uint32 minFinalityThreshold
    ) external {
        require(amount > 0, "Amount must be nonzero");
        require(mintRecipient != bytes32(0), "Mint recipient must be nonzero");
        require(maxFee < amount, "Max fee must be less than amount");
        bytes32 destinationTokenMessenger = remoteTokenMessengers[destinationDomain];
        require(destinationTokenMessenger != bytes32(0), "No TokenMessenger for domain");
        require(remoteTokens[burnToken][destinationDomain] != bytes32(0), "Burn token not supported");

        IMintBurnToken token = IMintBurnToken(burnToken);
        require(token.transferFrom(msg.sender, address(this), amount), "Transfer operation failed");
        token.burn(amount);

        bytes memory hookData = "";
        bytes memory body = abi.encodePacked(
            MESSAGE_BODY_VERSION,
            bytes32(uint256(uint160(burnToken))),
            mintRecipient,
            amount,
            bytes32(uint256(uint160(msg.sender))),
            maxFee,
            uint256(0), // feeExecuted: set by the attester
            uint256(0), // expirationBlock: none
            hookData
        );
        localMessageTransmitter.sendMessage(
            destinationDomain, destinationTokenMessenger, destinationCaller, minFinalityThreshold, body
        );
        emit DepositForBurn(
            burnToken,
            amount,
            msg.sender,
            mintRecipient,
            destinationDomain,
            destinationTokenMessenger,
            destinationCaller,
            maxFee,
            minFinalityThreshold,
            hookData
        );
    }

    function handleReceiveFinalizedMessage(
        uint32 remoteDomain,
        bytes32 sender,
        uint32, /* finalityThresholdExecuted */
        bytes calldata messageBody
    ) external returns (bool) {
        return _mintFromMessage(remoteDomain, sender, messageBody);
    }

    function handleReceiveUnfinalizedMessage(
        uint32 remoteDomain,
        bytes32 sender,
        uint32, /* finalityThresholdExecuted */
        bytes calldata messageBody
    ) external returns (bool) {
        return _mintFromMessage(remoteDomain, sender, messageBody);
    }

    function _mintFromMessage(uint32 remoteDomain, bytes32 sender, bytes calldata body)
        internal
        returns (bool)
    {
        require(msg.sender == address(localMessageTransmitter), "Invalid message transmitter");
        require(remoteTokenMessengers[remoteDomain] == sender, "Remote TokenMessenger unsupported");
        require(body.length >= 228, "Invalid message body length");
        require(uint32(bytes4(body[0:4])) == MESSAGE_BODY_VERSION, "Invalid message body version");

        bytes32 burnToken = bytes32(body[4:36]);
        address mintRecipient = address(uint160(uint256(bytes32(body[36:68]))));
        uint256 amount = uint256(bytes32(body[68:100]));
        uint256 maxFee = uint256(bytes32(body[132:164]));
        uint256 feeExecuted = uint256(bytes32(body[164:196]));
        uint256 expirationBlock = uint256(bytes32(body[196:228]));

        require(expirationBlock == 0 || block.number < expirationBlock, "Message expired");
        require(feeExecuted <= maxFee, "Fee exceeds max fee");
        require(feeExecuted < amount, "Fee equals or exceeds amount");
        address localToken = localTokens[keccak256(abi.encodePacked(remoteDomain, burnToken))];
        require(localToken != address(0), "Mint token not supported");

        uint256 net = amount - feeExecuted;
        IMintBurnToken(localToken).mint(mintRecipient, net);
        if (feeExecuted > 0) {
            IMintBurnToken(localToken).mint(feeRecipient, feeExecuted);
        }
        emit MintAndWithdraw(mintRecipient, net, localToken, feeExecuted);
        return true;
    }
}
